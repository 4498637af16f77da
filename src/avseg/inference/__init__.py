"""Running a trained model on videos and clips: `Predictor`, video decoding, overlays, `avseg predict`."""
