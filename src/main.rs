/// The allocator of the whole binary: mimalloc, not glibc's malloc, which was about a quarter
/// of the daemon's time reading a large file again (BENCHMARKS.md, "the daemon's one-line
/// edit"). The benches use it too; the library itself names no allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    backplan::cli::main().into()
}
