//! The `lomob` binary: everything happens in [`lomob::cli::main`].

fn main() -> std::process::ExitCode {
    lomob::cli::main()
}
