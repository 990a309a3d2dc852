//! The `cardform` binary: everything is in the library (`cli::main`).

fn main() -> std::process::ExitCode {
    cardform::cli::main()
}
