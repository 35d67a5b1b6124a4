//! Development tools of polyai-relay: a local stand-in for PolyAI's APIs (`mock_api`), a sender
//! of signed webhooks and load generator (`sender`), and their commands (`mock-api`, `send`,
//! `demo`). The one binary offers them beside the service's commands; the service library
//! (`polyai_relay`) knows nothing of them.

pub mod cli;
pub mod mock_api;
pub mod sender;
