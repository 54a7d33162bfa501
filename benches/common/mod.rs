//! What every bench target shares (each includes it with `mod common;`).

/// The multi-threaded runtime a bench runs its daemon and simulator on; exits 2 (the
/// benches' "could not measure") when there is none.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(2);
        }
    }
}
