"""The peer runtime: round protocol, leader work and model exchange, inside a training process."""
