//! The use cases: the floor every front end calls. `convoy`'s subcommands (`cmd/`), the
//! console (`gui/`) and the server (`serve/`) do the same things through these functions, so a
//! rule (how a release is signed, how a policy file is read, where the trust directory is) is
//! written once.
//!
//! This is not a front end: nothing here prompts or draws, and only `runs` parses arguments
//! (the run spec's one definition, shared by the command line and `convoy serve --dispatch-args`), and nothing here
//! imports `cmd/`, `gui/` or `serve/` (the tidy test checks it). Results and errors go back to
//! the caller to show; the one exception is `findings::load_policy`, which still warns on
//! standard error about a policy section it does not know, as `convoy score` always did. It is not the
//! store either: SQL stays in `store/`, and callers that only store or list call `store::`
//! directly. Decisions stay in `convoy_core`; a use case reads files, calls the core and hands
//! back values.
//!
//! Rooms (issue 17): `releases`, `plans`, `findings`, `reports`, `settings`, `runs` (the typed
//! run spec and the engine's options), `tokens` (operators, roles, API tokens and the person
//! behind one), `requests` (create, decide, dispatch: the two-person rule) and `hosting` (engine
//! runs hosted in this process and steered through their control handles). The server and the
//! console both call these; `serve::{auth, requests, host}` are their old names, kept as
//! re-exports.

pub mod cohorts;
pub mod findings;
pub mod hosting;
pub mod plans;
pub mod releases;
pub mod reports;
pub mod requests;
pub mod runs;
pub mod settings;
pub mod signals;
pub mod tokens;
