//! The crash that fail points simulate: a leaf module, so that any module may call it
//! without importing the daemon's wiring.

/// Ends the process at once, as a crash or power loss would: used only by the fail points
/// (`failpoints` feature) that the crash tests arm.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub fn simulated_crash() -> ! {
    eprintln!("tented-bulkd: simulated crash (fail point)");
    std::process::abort()
}
