//! Test support: netns.
