//! The simulation (written next).
