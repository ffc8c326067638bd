"""What training, serving and the launcher share: the model artifact, the network, ranking, database engines."""
