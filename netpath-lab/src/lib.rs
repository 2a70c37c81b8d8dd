//! netpath-lab: the test and benchmark rig of netpath, kept out of the
//! shipped product. It drives the product through the `netpath` library
//! and binary (never the reverse).
//!
//! Modules depend downwards only: `fixture` (the hermetic lab) and `probes`
//! (traffic endpoints) stand alone; `demo` and `bench` build on them; `cli`
//! sits on top of everything.
pub mod bench;
pub mod cli;
pub mod demo;
pub mod fixture;
pub mod multihost;
pub mod probes;

pub use fixture::{At, Binaries, Lab};
