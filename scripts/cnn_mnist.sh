#!/usr/bin/env bash
# Paper 1: CNN-MNIST.
source "$(dirname "$0")/_paper.sh"
paper_table mnist cnn "CNN on MNIST (paper 1)" "$@"
