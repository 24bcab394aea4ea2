#!/usr/bin/env bash
# Paper 1: CNN-Fashion-MNIST (needs the Fashion-MNIST IDX files or tfds).
source "$(dirname "$0")/_paper.sh"
paper_table fashion_mnist cnn "CNN on Fashion-MNIST (paper 1)" "$@"
