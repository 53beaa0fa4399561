//! The `tonewall` binary: parses arguments and hands over to the CLI module. Errors are one
//! line on stderr with exit code 2; a panic is a bug.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("tonewall: {e}");
        std::process::exit(2);
    }
}
