//! `cairn token create --role R [--name N] | list | revoke ID`: the API tokens an admin
//! hands out (stored hashed by the server; a new token is printed once, on stdout).

use anyhow::anyhow;
use cairn_client::api::{CreateTokenRequest, TokenRole};
use clap::Subcommand;

use super::args::{Connection, Output, ServerArgs};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token and print it (only this once).
    Create {
        /// admin, user (runs), read-only (GET only), registration (executors) or metrics
        /// (`GET /metrics` only).
        #[arg(long)]
        role: String,
        /// A name to recognize it by in `cairn token list`.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// The tokens: id, role, name, creation time (never the secret).
    List,
    /// Revoke a token by its id: it is refused from then on.
    Revoke { id: String },
}

pub async fn token(cmd: TokenCommand, args: ServerArgs) -> anyhow::Result<u8> {
    let role = match &cmd {
        TokenCommand::Create { role, .. } => Some(TokenRole::parse(role).ok_or_else(|| {
            anyhow!("unknown role {role:?} (admin, user, read-only, registration or metrics)")
        })?),
        _ => None,
    };
    let conn = Connection::open(&args).await?;
    let result = async {
        match cmd {
            TokenCommand::Create { name, .. } => {
                let role = role.ok_or_else(|| anyhow!("a role is required"))?;
                let made = conn
                    .client
                    .create_token(&CreateTokenRequest { role, name })
                    .await?;
                if args.output == Output::Json {
                    outln!("{}", serde_json::to_string_pretty(&made)?)?;
                } else {
                    outln!("{}", made.token)?;
                    errln!(
                        "token {} ({}) created; it is shown only this once",
                        made.info.id,
                        made.info.role.as_str()
                    );
                }
            }
            TokenCommand::List => {
                let list = conn.client.tokens().await?;
                if args.output == Output::Json {
                    outln!("{}", serde_json::to_string_pretty(&list)?)?;
                } else {
                    outln!("{:<16}  {:<12}  {:<25}  NAME", "ID", "ROLE", "CREATED")?;
                    for t in &list.tokens {
                        outln!(
                            "{:<16}  {:<12}  {:<25}  {}",
                            t.id,
                            t.role.as_str(),
                            t.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            t.name
                        )?;
                    }
                }
            }
            TokenCommand::Revoke { id } => {
                conn.client.revoke_token(&id).await?;
                outln!("token {id} revoked")?;
            }
        }
        Ok(0)
    }
    .await;
    conn.close().await;
    result
}
