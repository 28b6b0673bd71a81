//! The README's commands and the committed data/ are checked here.
