//! The mock of PolyAI's APIs (`polyai_relay_devtools::mock_api`) with the fake's key and ids, for
//! tests that need what only it serves (real WAVs, real cursors), and a relay fetching from it.

use std::path::PathBuf;

use polyai_relay::config::{AudioDirection, AudioSettings};
use polyai_relay_devtools::mock_api::{MockApi, MockConfig, RunningMock};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::{
    backend::Backend,
    fake_polyai::{ACCOUNT, API_KEY, PROJECT},
    helpers::Options,
};

/// The mock API on port 0, with the fake's key and ids, and what stops it.
pub async fn mock() -> (RunningMock, CancellationToken) {
    let config = MockConfig {
        api_key: SecretString::from(API_KEY),
        account_id: ACCOUNT.into(),
        project_id: PROJECT.into(),
        ..MockConfig::default()
    };
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (MockApi::start(config, listener, shutdown.clone()).await.unwrap(), shutdown)
}

/// Recordings saved in `dir`, up to 1 GiB each.
pub fn recordings(dir: PathBuf, direction: AudioDirection, redacted: bool) -> AudioSettings {
    AudioSettings { dir, direction, redacted, max_bytes: 1 << 30 }
}

/// A relay on the embedded queue that fetches from `mock` and saves recordings as `audio` says.
pub fn fetching_from(mock: &RunningMock, audio: &AudioSettings) -> Options {
    Options {
        backend: Backend::Embedded,
        api_url: Some(mock.base_url()),
        audio: Some(audio.clone()),
        ..Options::default()
    }
}
