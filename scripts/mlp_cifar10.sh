#!/usr/bin/env bash
# Paper 1: MLP-CIFAR-10 (needs cifar-10-batches-py/).
source "$(dirname "$0")/_paper.sh"
paper_table cifar10 mlp "MLP on CIFAR-10 (paper 1)" "$@"
