//! crust: connections between peers.
