"""fastcnn's benchmarks (installed as ``fastcnn.bench``)."""
