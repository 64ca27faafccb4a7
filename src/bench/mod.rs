pub mod admt;
pub mod layers;
pub mod step;
