//! What a run is asked to do: the experiment file (data, model, training,
//! evaluation) and the device it runs on.

pub mod device;
pub mod experiment;
