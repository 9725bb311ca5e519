//! Where the admin token comes from: a file or the environment, never the
//! command line, which every user of the machine reads in `/proc/*/cmdline`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

/// The environment variable that may hold the admin token.
pub const TOKEN_VAR: &str = "SESSIONIZE_ADMIN_TOKEN";

/// Fewest characters an admin token may have (a generated one has 64).
pub const MIN_TOKEN_CHARS: usize = 16;

/// `--admin-token-file`, and the refusal of `--admin-token`.
#[derive(Debug, Clone, Args)]
pub struct AdminTokenArgs {
    /// A file holding the admin token (at least 16 characters; keep it
    /// owner-only). Default: the SESSIONIZE_ADMIN_TOKEN environment variable,
    /// else the token in the state directory.
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// Refused: a token in argv is visible to every user of the machine.
    #[arg(long = "admin-token", hide = true, value_parser = token_in_argv)]
    pub admin_token_in_argv: Option<String>,
}

fn token_in_argv(_: &str) -> Result<String, String> {
    Err(format!(
        "a token on the command line is visible to every user of this machine \
         (/proc/*/cmdline): set {TOKEN_VAR} or give --admin-token-file PATH"
    ))
}

impl AdminTokenArgs {
    /// The token the operator gave (file first, then the environment), if
    /// any, checked for length.
    pub fn token(&self) -> Result<Option<String>> {
        let (token, from) = match &self.admin_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the admin token {}", path.display()))?;
                (text, format!("{}", path.display()))
            }
            None => match std::env::var(TOKEN_VAR) {
                Ok(text) => (text, TOKEN_VAR.to_owned()),
                Err(_) => return Ok(None),
            },
        };
        let token = token.trim().to_owned();
        let chars = token.chars().count();
        if chars < MIN_TOKEN_CHARS {
            bail!(
                "the admin token from {from} has {chars} characters: use at least \
                 {MIN_TOKEN_CHARS} (for example `openssl rand -hex 32`)"
            );
        }
        if token.chars().any(|c| !c.is_ascii_graphic()) {
            bail!("the admin token from {from} holds spaces or characters beyond printable ASCII");
        }
        Ok(Some(token))
    }
}
