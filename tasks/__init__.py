"""The work of the loop: data, models, training, energy meters, compression, evaluation."""
