//! Helpers shared by the kernel-facing tests.
