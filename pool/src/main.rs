use clap::Parser;
use quarry_pool::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => quarry_pool::run::run(cli.run).await,
        Some(Command::Run(args)) => quarry_pool::run::run(*args).await,
        Some(Command::Workers(args)) => {
            print!("{}", quarry_pool::cli::workers(&args).await?);
            Ok(())
        }
        Some(Command::Blocks(args)) => {
            print!("{}", quarry_pool::cli::blocks(&args).await?);
            Ok(())
        }
        Some(Command::Nodes(args)) => {
            print!("{}", quarry_pool::cli::nodes(&args).await?);
            Ok(())
        }
    }
}
