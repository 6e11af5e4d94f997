use std::process::ExitCode;

fn main() -> ExitCode {
    portwatch::main_with_args(std::env::args_os())
}
