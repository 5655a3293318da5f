fn main() -> std::process::ExitCode {
    backplan::cli::main().into()
}
