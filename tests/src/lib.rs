//! Kernel test harness used by every crate's kernel tests.
