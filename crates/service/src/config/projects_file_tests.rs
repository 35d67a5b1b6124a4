use super::*;

const TWO: &str = r#"
[[project]]
name = "acme-uk"
webhook_secret_file = "/run/secrets/acme-uk-webhook"
api_key_file = "/run/secrets/acme-uk-api-key"
account_id = "ws-acme"
project_id = "PROJECT-UK"
region = "uk"
environments = ["live"]

[[project]]
name = "acme-us"
path = "/hooks/us"
base_url = "http://127.0.0.1:9999"
events = ["conversation.completed"]
"#;

fn error(text: &str) -> String {
    ProjectsFile::parse(text).unwrap_err().to_string()
}

#[test]
fn a_file_lists_projects_with_their_paths_hosts_and_filters() {
    let file = ProjectsFile::parse(TWO).unwrap();
    let [uk, us] = file.projects.as_slice() else { panic!("two projects") };
    assert_eq!(uk.name.as_str(), "acme-uk");
    assert_eq!(uk.path, "/polyai-events/acme-uk", "the default path");
    assert_eq!(uk.runtime_url.as_ref().unwrap().as_str(), "https://api.uk-1.platform.polyai.app/");
    assert_eq!(uk.platform_url.as_ref().unwrap().as_str(), "https://api.uk.poly.ai/");
    assert_eq!(uk.environments, Some(Some(vec!["live".to_owned()])));
    assert_eq!(uk.events, None);
    assert_eq!(us.path, "/hooks/us");
    assert_eq!(us.runtime_url.as_ref().unwrap().host(), "127.0.0.1");
    assert_eq!(us.platform_url, None);
    assert_eq!(us.events, Some(EventTypes::Only(vec!["conversation.completed".into()])));
}

#[test]
fn a_project_forwards_its_own_events_and_environments_else_the_relays() {
    let file = ProjectsFile::parse(&format!("{TWO}environments = [\"all\"]\n")).unwrap();
    let [uk, us] = file.projects.as_slice() else { panic!("two projects") };
    let sandbox_handoffs = Forwarding {
        event_types: EventTypes::Only(vec!["handoff.created".into()]),
        environments: Some(vec!["sandbox".into()]),
    };
    let uk = uk.forwarding(&sandbox_handoffs);
    assert_eq!(uk.event_types, sandbox_handoffs.event_types, "RELAY_EVENTS");
    assert_eq!(uk.environments, Some(vec!["live".to_owned()]), "its own");
    let us = us.forwarding(&sandbox_handoffs);
    assert_eq!(us.event_types, EventTypes::Only(vec!["conversation.completed".into()]), "its own");
    assert_eq!(us.environments, None, "`all` of its own, over RELAY_ENVIRONMENTS");
}

#[test]
fn the_broker_binds_every_type_some_project_forwards() {
    let file = ProjectsFile::parse(TWO).unwrap();
    let default = EventTypes::Only(vec!["conversation.completed".into(), "handoff.created".into()]);
    assert_eq!(file.event_types(&default), default);
    let narrow = EventTypes::Only(vec!["handoff.created".into()]);
    assert_eq!(
        file.event_types(&narrow),
        EventTypes::Only(vec!["handoff.created".into(), "conversation.completed".into()])
    );
    let all = ProjectsFile::parse("[[project]]\nname = \"a\"\nevents = [\"*\"]\n").unwrap();
    assert_eq!(all.event_types(&narrow), EventTypes::All);
}

#[test]
fn every_mistake_names_the_project_and_the_field() {
    let cases = [
        ("", "lists no [[project]]"),
        ("[[project]]\nname = \"a\"\nsecret = \"x\"\n", "unknown field `secret`"),
        ("[[project]]\npath = \"/a\"\n", "missing field `name`"),
        ("[[project]]\nname = \"Acme\"\n", "project #1: name `Acme`"),
        ("[[project]]\nname = \"a\"\n[[project]]\nname = \"a\"\n", "project `a`: name is used by another project too"),
        (
            "[[project]]\nname = \"a\"\npath = \"/x\"\n[[project]]\nname = \"b\"\npath = \"/x\"\n",
            "project `b`: path `/x` is project `a`'s path too",
        ),
        (
            "[[project]]\nname = \"a\"\n[[project]]\nname = \"b\"\npath = \"/polyai-events/a\"\n",
            "project `b`: path `/polyai-events/a` is project `a`'s path too",
        ),
        ("[[project]]\nname = \"a\"\npath = \"x\"\n", "project `a`: path `x` must be an absolute path"),
        ("[[project]]\nname = \"a\"\npath = \"/{id}\"\n", "project `a`: path `/{id}` must be"),
        ("[[project]]\nname = \"a\"\nregion = \"mars\"\n", "project `a`: region `mars` is not a PolyAI region"),
        (
            "[[project]]\nname = \"a\"\nbase_url = \"https://api.us.poly.ai\"\n",
            "project `a`: base_url points at api.us.poly.ai, the Agents/Webhooks host; the Conversations v3 API is on api.us-1.platform.polyai.app",
        ),
        (
            "[[project]]\nname = \"a\"\nplatform_url = \"https://api.us-1.platform.polyai.app\"\n",
            "project `a`: platform_url points at api.us-1.platform.polyai.app, the runtime host",
        ),
        ("[[project]]\nname = \"a\"\nbase_url = \"nonsense\"\n", "project `a`: base_url is not a URL"),
        ("[[project]]\nname = \"a\"\naccount_id = \"../x\"\n", "project `a`: account_id `../x` may hold only"),
        ("[[project]]\nname = \"a\"\nevents = []\n", "project `a`: events is empty"),
        ("[[project]]\nname = \"a\"\nevents = [\"*\", \"x\"]\n", "project `a`: events mixes `*`"),
        ("[[project]]\nname = \"a\"\nenvironments = []\n", "project `a`: environments is empty"),
        ("[[project]\nname = \"a\"\n", "not valid"),
    ];
    for (text, expected) in cases {
        let error = error(text);
        assert!(error.contains(expected), "{text:?}\n  gave: {error}\n  want: {expected}");
    }
}

#[test]
fn a_missing_file_is_named_with_its_path() {
    let error = ProjectsFile::load(Path::new("/nonexistent/projects.toml")).unwrap_err().to_string();
    assert_eq!(error, "RELAY_PROJECTS_FILE /nonexistent/projects.toml: cannot read it: entity not found");
}

#[test]
fn secret_files_are_read_when_a_command_needs_them_and_never_quoted() {
    let dir = std::env::temp_dir().join(format!("relay-projects-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("webhook");
    std::fs::write(&secret, "whsec-from-a-file\n").unwrap();
    let text = format!("[[project]]\nname = \"a\"\nwebhook_secret_file = \"{}\"\n", secret.display());
    let file = ProjectsFile::parse(&text).unwrap();
    let entry = &file.projects[0];
    let read = entry.require_secret("webhook_secret_file", entry.webhook_secret_file.as_deref(), "to verify").unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&read), "whsec-from-a-file");

    let missing = entry.require_secret("api_key_file", entry.api_key_file.as_deref(), "to fetch conversations");
    assert_eq!(missing.unwrap_err().to_string(), "project `a`: api_key_file is required to fetch conversations");
    let unreadable = entry.require_secret("api_key_file", Some(&dir.join("nope")), "to fetch conversations");
    let unreadable = unreadable.unwrap_err().to_string();
    assert!(unreadable.starts_with("project `a`: api_key_file: cannot read "), "{unreadable}");
    std::fs::write(&secret, "\n").unwrap();
    let empty = entry.require_secret("webhook_secret_file", Some(&secret), "to verify").unwrap_err().to_string();
    assert!(empty.contains("is empty") && !empty.contains("whsec"), "{empty}");
    std::fs::remove_dir_all(dir).unwrap();
}
