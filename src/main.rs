//! The `tented-bulkd` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The crash tests arm fail points through the FAILPOINTS variable; without the
    // `failpoints` feature (every normal build) this does not exist.
    #[cfg(feature = "failpoints")]
    let _fail_scenario = fail::FailScenario::setup();
    let cli = tented_bulkd::cli::Cli::parse();
    match tented_bulkd::cli::main_with(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tented-bulkd: {}", tented_bulkd::cli::error_report(&e));
            ExitCode::from(tented_bulkd::cli::exit_code_for(&e))
        }
    }
}
