//! Integration tests for testkit (and listwatch through it), over real sockets.

mod common;
mod faults;
mod http;
mod kubectl;
mod watcher;
