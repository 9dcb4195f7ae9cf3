//! Followed files and Storage-export folders.
