pub mod layers;
pub mod step;
