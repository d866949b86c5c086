//! ciliumc-runtime: loads and runs what `ciliumc compile` produces.
