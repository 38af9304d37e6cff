//! `api`: serve (locally or on Lambda), migrate, or seed demo data. All logic is in the library.

use api::config::{Cli, Command};
use api::startup::{self, Application};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = cli.config;
    plumbing::init_logging(config.log_format());
    // Once, before the secret is read: a setting that cannot work fails before any network call.
    // The URL a secret yields is built by the secret reader and checked when the store opens it.
    config.validate()?;
    let source = startup::resolve_database_url(&mut config).await?;
    let store = startup::open_store(&config, source)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            startup::migrate(&store, &config.calendar()?).await?;
            tracing::info!("migrations applied");
        }
        #[cfg(feature = "seed")]
        Command::Seed { scale, days, .. } => {
            startup::seed_demo(&store, &config.calendar()?, scale, days).await?;
            // Closing checkpoints SQLite's write-ahead log into the database file.
            store.close().await;
        }
        Command::Serve if config.on_lambda() => {
            let state = startup::build_state(&config, store)?;
            startup::run_lambda(state).await.map_err(|e| anyhow::anyhow!(e))?;
        }
        Command::Serve => {
            #[cfg(feature = "sqlite")]
            startup::prepare_embedded_default(&config, &store).await?;
            let state = startup::build_state(&config, store)?;
            let app = Application::bind(config.bind_addr, state, config.shutdown_timeout).await?;
            tracing::info!(address = %app.local_addr(), "listening");
            app.run_until_stopped(plumbing::shutdown_signal()).await?;
        }
    }
    Ok(())
}
