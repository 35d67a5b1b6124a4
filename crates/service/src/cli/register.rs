//! `register`: create the webhook endpoint with PolyAI's Webhooks API and print its signing
//! secret once; `--list` and `--rotate ID` for the endpoints that exist. With
//! `RELAY_PROJECTS_FILE`, it works on one project (`--project NAME`, or the file's only one),
//! with that project's platform host and key, and registers that project's webhook path.

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use super::stdout;
use crate::{
    config::{defaults, parse_list, EventTypes, PlatformArgs, ProjectChoice, ProjectEntry},
    polyai::{advice, ApiError, EndpointClient, NewEndpoint},
};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("action").required(true).args(["url", "list", "rotate"]))]
pub struct RegisterArgs {
    /// The relay's public webhook URL (https only). With RELAY_PROJECTS_FILE, the public base
    /// (`https://relay.example.com`) is enough: the project's path is added.
    #[arg(long)]
    url: Option<String>,
    /// Event types to subscribe to (comma-separated) [default: the project's `events`, else
    /// RELAY_EVENTS, the types the relay forwards; conversation.completed,handoff.created when
    /// that is `*`].
    #[arg(long)]
    events: Option<String>,
    /// The event types the relay forwards (as `run` reads them), the default of `--events`.
    #[arg(long = "relay-events", env = "RELAY_EVENTS", hide = true)]
    relay_events: Option<String>,
    /// A name for the endpoint.
    #[arg(long, default_value = "polyai-relay")]
    name: String,
    /// List the account's endpoints instead.
    #[arg(long)]
    list: bool,
    /// Rotate the signing secret of this endpoint id instead.
    #[arg(long, value_name = "ID")]
    rotate: Option<String>,
    /// The path the relay receives one project's webhooks on (as `run` reads it), added to a bare
    /// `--url`. A projects file gives each project its own.
    #[arg(long = "relay-path", env = "RELAY_PATH", hide = true)]
    relay_path: Option<String>,
    #[command(flatten)]
    choice: ProjectChoice,
    #[command(flatten)]
    platform: PlatformArgs,
}

/// What is needed "to register webhooks": the end of a missing setting's error.
const WHY: &str = "to register webhooks";

/// How the messages name the settings to change: the variables, or the project's fields.
struct Names {
    /// `None`: the one project of the POLYAI_* variables.
    project: Option<ProjectEntry>,
}

impl Names {
    fn platform_key(&self) -> String {
        match &self.project {
            None => "set POLYAI_PLATFORM_API_KEY".into(),
            Some(entry) => format!("give project `{}` a platform_api_key_file", entry.name),
        }
    }

    fn secret(&self) -> String {
        match &self.project {
            None => "POLYAI_WEBHOOK_SECRET".into(),
            Some(entry) => format!("project `{}`'s webhook_secret_file", entry.name),
        }
    }

    fn previous_secret(&self) -> String {
        match &self.project {
            None => "POLYAI_WEBHOOK_SECRET_PREVIOUS".into(),
            Some(_) => "its webhook_secret_previous_file".into(),
        }
    }

    /// Whose webhook path the relay receives these webhooks on.
    fn route(&self) -> String {
        match &self.project {
            None => "the relay's webhook path (RELAY_PATH)".into(),
            Some(entry) => format!("project `{}`'s path", entry.name),
        }
    }

    /// `register`, with the `--project` a later command needs to reach the same project.
    fn command(&self) -> String {
        match &self.project {
            None => "polyai-relay register".into(),
            Some(entry) => format!("polyai-relay register --project {}", entry.name),
        }
    }
}

fn explain(error: ApiError, names: &Names) -> anyhow::Error {
    match &error {
        ApiError::Rejected { status: 409, .. } => anyhow::anyhow!(
            "{error}\nPolyAI allows 10 webhook endpoints per account and this one has them all: `{} --list` shows them; delete one you no longer use, or reuse it",
            names.command()
        ),
        ApiError::Unauthorized { .. } => anyhow::anyhow!(
            "{error}\nthe Webhooks API takes the workspace-scoped key: {} (a v3 Conversations key is not enough)",
            names.platform_key()
        ),
        _ => anyhow::anyhow!("{error}\n{}", advice(&error)),
    }
}

/// PolyAI shows a new secret only this once: a secret that could not be written (a reader gone,
/// a full disk) fails the command, so that its operator knows to rotate it, never a quiet 0.
fn print_secret(secret: &SecretString, id: &str, names: &Names) -> anyhow::Result<()> {
    stdout::essential_line(format_args!("signing secret: {}", secret.expose_secret())).map_err(|error| {
        anyhow::anyhow!(
            "the new signing secret of {id} could not be written to stdout ({error}); rotate it: `{} --rotate {id}`",
            names.command()
        )
    })
}

/// The account's endpoint that already has `url`, if the account's endpoints can be listed. A
/// second endpoint for the same URL would have PolyAI deliver every event twice, the second copy
/// signed with a secret the relay does not hold (refused with 401 until PolyAI gives up on it),
/// so running `register` again makes none.
async fn already_registered(client: &EndpointClient, url: &str) -> Option<serde_json::Value> {
    match client.list().await {
        Ok(endpoints) => endpoints.into_iter().find(|endpoint| endpoint["url"].as_str() == Some(url)),
        // The quickstart's API has no listing: nothing to look in.
        Err(ApiError::NotFound { .. }) => None,
        Err(error) => {
            tracing::warn!(%error, "the account's endpoints could not be listed: registering without looking for one with this URL");
            None
        }
    }
}

/// The event types subscribed to when neither `--events`, the project nor RELAY_EVENTS names them.
const DEFAULT_EVENTS: &str = crate::config::defaults::EVENTS;

/// The URL to register: https only (PolyAI delivers only over TLS), and on the path the relay
/// receives these webhooks on (`route`): added to a bare base, a trailing slash dropped (the
/// relay's route has none, and PolyAI does not retry the 404 every delivery would get), and a
/// warning when another path is given (only a proxy that rewrites paths would bring PolyAI's posts
/// to the route then).
fn endpoint_url(url: &str, route: &str, names: &Names) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("--url `{url}` is not a URL ({e})"))?;
    anyhow::ensure!(
        parsed.scheme() == "https",
        "--url must be an https:// URL: PolyAI delivers webhooks only over TLS"
    );
    let given = parsed.path().trim_end_matches('/').to_owned();
    if given.is_empty() {
        parsed.set_path(route);
    } else if given.ends_with(route) {
        parsed.set_path(&given);
    } else {
        eprintln!(
            "! --url's path `{}` is not {} `{route}`: the relay verifies these webhooks on that path only; give the public base (https://host) and `register` adds it",
            parsed.path(),
            names.route()
        );
    }
    stdout::line(format_args!("{} is `{route}`: registering {parsed}", names.route()));
    Ok(parsed.to_string())
}

impl RegisterArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let chosen = self.choice.choose()?;
        let names = Names { project: chosen.one("register")?.cloned() };
        let project = names.project.as_ref();
        // Checked before anything is sent.
        let route = match project {
            Some(entry) => entry.path.clone(),
            None => self.relay_path.clone().unwrap_or_else(|| defaults::PATH.to_owned()),
        };
        let url = self.url.as_deref().map(|url| endpoint_url(url, &route, &names)).transpose()?;
        let client = EndpointClient::new(&self.platform.chosen(project, WHY)?)?;
        if self.list {
            let endpoints = client.list().await.map_err(|e| explain(e, &names))?;
            if endpoints.is_empty() {
                stdout::line(format_args!("no webhook endpoints"));
            }
            for endpoint in endpoints {
                let text = |key: &str| endpoint[key].as_str().unwrap_or("").to_owned();
                let types: Vec<&str> = endpoint["event_types"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                let state = if endpoint["enabled"] == false { "disabled" } else { "enabled" };
                stdout::line(format_args!("{}  {state}  {}  {}", text("id"), text("url"), types.join(",")));
            }
            return Ok(());
        }
        if let Some(id) = &self.rotate {
            let secret = client.rotate(id).await.map_err(|e| explain(e, &names))?;
            stdout::line(format_args!("rotated the signing secret of {id}"));
            print_secret(&secret, id, &names)?;
            stdout::line(format_args!(
                "PolyAI stops using the old secret now: set {} to this one, and keep the old one as {} until every relay has it.",
                names.secret(),
                names.previous_secret()
            ));
            return Ok(());
        }
        let endpoint = NewEndpoint {
            name: self.name.clone(),
            url: url.unwrap_or_default(),
            event_types: match (&self.events, project.and_then(|entry| entry.events.as_ref())) {
                (Some(events), _) => parse_list(events),
                (None, Some(EventTypes::Only(types))) => types.clone(),
                (None, Some(EventTypes::All)) => parse_list(DEFAULT_EVENTS),
                // What the relay forwards of a project without a list of its own. `*` names no
                // type to subscribe to: the default ones then.
                (None, None) => match self.relay_events.as_deref().map(parse_list) {
                    Some(types) if !types.is_empty() && !types.iter().any(|t| t == "*") => types,
                    _ => parse_list(DEFAULT_EVENTS),
                },
            },
        };
        anyhow::ensure!(!endpoint.event_types.is_empty(), "--events is empty");
        if let Some(existing) = already_registered(&client, &endpoint.url).await {
            let id = existing["id"].as_str().unwrap_or_default();
            let types: Vec<&str> = existing["event_types"]
                .as_array()
                .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            stdout::line(format_args!(
                "{} is already registered, as endpoint {id} ({}): no second endpoint made. Its signing secret was shown when it was made; `{} --rotate {id}` makes a new one",
                endpoint.url,
                types.join(","),
                names.command()
            ));
            return Ok(());
        }
        let registered = client.create(&endpoint).await.map_err(|e| explain(e, &names))?;
        if registered.id.is_empty() {
            // An answer that is not the documented JSON (a proxy's page, say): the endpoint may
            // exist all the same, and a second run would make another.
            if let Some(secret) = &registered.signing_secret {
                print_secret(secret, "the new endpoint", &names)?;
            }
            anyhow::bail!(
                "PolyAI answered the registration (via {}) without the new endpoint's id, so whether it exists is unknown: `{} --list` shows the account's endpoints before you run this again",
                registered.path,
                names.command()
            );
        }
        stdout::line(format_args!("registered endpoint {} (via {})", registered.id, registered.path));
        match &registered.signing_secret {
            Some(secret) => {
                print_secret(secret, &registered.id, &names)?;
                stdout::line(format_args!(
                    "Store it now, as {}: PolyAI shows it only once. Lost it? `{} --rotate {}`.",
                    names.secret(),
                    names.command(),
                    registered.id
                ));
            }
            None => stdout::line(format_args!(
                "PolyAI returned no signing secret; rotate one with `{} --rotate {}`",
                names.command(),
                registered.id
            )),
        }
        Ok(())
    }
}
