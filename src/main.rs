fn main() -> std::process::ExitCode {
    cardform::cli::main()
}
