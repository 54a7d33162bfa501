//! The `tented-bulkd` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tented_bulkd::cli::Cli::parse();
    match tented_bulkd::cli::main_with(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tented-bulkd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
