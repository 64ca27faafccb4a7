use clap::Parser;

fn main() {
    let cli = ssnet::cli::Cli::parse();
    if let Err(e) = ssnet::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
