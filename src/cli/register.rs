//! `register`: create the webhook endpoint with PolyAI's Webhooks API and print its signing
//! secret once; `--list` and `--rotate ID` for the endpoints that exist.

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use crate::{
    config::{parse_list, PlatformArgs},
    polyai::{advice, ApiError, EndpointClient, NewEndpoint},
};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("action").required(true).args(["url", "list", "rotate"]))]
pub struct RegisterArgs {
    /// The relay's public webhook URL (https only).
    #[arg(long)]
    url: Option<String>,
    /// Event types to subscribe to (comma-separated).
    #[arg(long, default_value = "conversation.completed,handoff.created")]
    events: String,
    /// A name for the endpoint.
    #[arg(long, default_value = "polyai-relay")]
    name: String,
    /// List the account's endpoints instead.
    #[arg(long)]
    list: bool,
    /// Rotate the signing secret of this endpoint id instead.
    #[arg(long, value_name = "ID")]
    rotate: Option<String>,
    #[command(flatten)]
    platform: PlatformArgs,
}

fn explain(error: ApiError) -> anyhow::Error {
    match &error {
        ApiError::Rejected { status: 409, .. } => anyhow::anyhow!(
            "{error}\nPolyAI allows 10 webhook endpoints per account and this one has them all: `polyai-relay register --list` shows them; delete one you no longer use, or reuse it"
        ),
        ApiError::Unauthorized { .. } => anyhow::anyhow!(
            "{error}\nthe Webhooks API takes the workspace-scoped key: set POLYAI_PLATFORM_API_KEY (a v3 Conversations key is not enough)"
        ),
        _ => anyhow::anyhow!("{error}\n{}", advice(&error)),
    }
}

fn print_secret(secret: &SecretString) {
    println!("signing secret: {}", secret.expose_secret());
}

impl RegisterArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        if let Some(url) = &self.url {
            // Refused here, before anything is sent: PolyAI delivers only to https.
            let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("--url `{url}` is not a URL ({e})"))?;
            anyhow::ensure!(
                parsed.scheme() == "https",
                "--url must be an https:// URL: PolyAI delivers webhooks only over TLS"
            );
        }
        let client = EndpointClient::new(&self.platform.require_platform()?)?;
        if self.list {
            let endpoints = client.list().await.map_err(explain)?;
            if endpoints.is_empty() {
                println!("no webhook endpoints");
            }
            for endpoint in endpoints {
                let text = |key: &str| endpoint[key].as_str().unwrap_or("").to_owned();
                let types: Vec<&str> = endpoint["event_types"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                let state = if endpoint["enabled"] == false { "disabled" } else { "enabled" };
                println!("{}  {state}  {}  {}", text("id"), text("url"), types.join(","));
            }
            return Ok(());
        }
        if let Some(id) = &self.rotate {
            let secret = client.rotate(id).await.map_err(explain)?;
            println!("rotated the signing secret of {id}");
            print_secret(&secret);
            println!("PolyAI stops using the old secret now: set POLYAI_WEBHOOK_SECRET to this one, and keep the old one as POLYAI_WEBHOOK_SECRET_PREVIOUS until every relay has it.");
            return Ok(());
        }
        let url = self.url.clone().unwrap_or_default();
        let endpoint = NewEndpoint { name: self.name.clone(), url, event_types: parse_list(&self.events) };
        anyhow::ensure!(!endpoint.event_types.is_empty(), "--events is empty");
        let registered = client.create(&endpoint).await.map_err(explain)?;
        println!("registered endpoint {} (via {})", registered.id, registered.path);
        match &registered.signing_secret {
            Some(secret) => {
                print_secret(secret);
                println!("Store it now, as POLYAI_WEBHOOK_SECRET: PolyAI shows it only once. Lost it? `polyai-relay register --rotate {}`.", registered.id);
            }
            None => println!(
                "PolyAI returned no signing secret; rotate one with `polyai-relay register --rotate {}`",
                registered.id
            ),
        }
        Ok(())
    }
}
