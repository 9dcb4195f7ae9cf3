//! Standard input, read as it comes.
