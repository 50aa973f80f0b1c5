"""Training side of aeserve: data loading, preprocessing, the autoencoder, training and export."""
