//! Developer tasks: `cargo xtask <command>`. Each command installs what it is
//! missing (see `toolchain`) and says plainly what it cannot install.
mod bench;
mod build;
mod imports;
mod lint;
/// The suite's result records, shared with the integration test that writes them.
#[path = "../../test/integration-test/src/report.rs"]
mod report;
mod results;
mod run;
mod services;
mod test;
mod test_tools;
mod toolchain;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF toolchain (compiler with library source, bpf-linker) if missing.
    Setup,
    /// Build the eBPF object only.
    BuildEbpf(build::Options),
    /// Build the eBPF object and the portwatch binary.
    Build(build::Options),
    /// Build, then trace (through sudo -E when not root). Arguments after `--` go to portwatch.
    Run(run::Options),
    /// Run every test: unit tests, then the kernel integration tests (root).
    Test(test::Options),
    /// The kernel integration suite on other kernels, booted under QEMU.
    VmTest(vm::VmOptions),
    /// cargo fmt --check and clippy -D warnings, userspace and eBPF crate; no import cycle.
    Lint,
    /// The module graph of each crate, and any import cycle in it.
    Imports {
        /// Print every module's imports.
        #[arg(long)]
        verbose: bool,
    },
    /// Regenerate the built-in IANA service table (needs npm).
    GenServices,
    /// Benchmark against no tracer, an empty program and bpftrace (root).
    Bench(bench::BenchOptions),
}

fn vm_test(options: &vm::VmOptions) -> anyhow::Result<()> {
    let object = build::build_ebpf(&toolchain::ensure()?, &build::Options::default())?;
    let suites = vm::vm_test(options, &object)?;
    let failed: Vec<&str> = suites
        .iter()
        .filter(|s| s.failed_checks() > 0)
        .map(|s| s.kernel.as_str())
        .collect();
    results::print_table(&suites);
    if !failed.is_empty() {
        anyhow::bail!("the suite failed on {}", failed.join(", "));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => toolchain::ensure().map(|_| ()),
        Command::BuildEbpf(o) => build::build_ebpf(&toolchain::ensure_or_exit(), &o).map(|_| ()),
        Command::Build(o) => build::build_all(&o).map(|_| ()),
        Command::Run(o) => run::run(o),
        Command::Test(o) => test::test(o),
        Command::VmTest(o) => vm_test(&o),
        Command::Lint => lint::lint(),
        Command::Imports { verbose } => imports::check(verbose),
        Command::GenServices => services::generate(),
        Command::Bench(o) => bench::bench(&o),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
