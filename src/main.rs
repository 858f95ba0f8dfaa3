//! The `twindex` command line (see `twindex --help` and ../shared/CLI.md).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
