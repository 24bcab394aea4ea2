#!/usr/bin/env bash
# Paper 1: MLP-MNIST, every layer and probe at p = 0..1, 3 seeds (also the paper-2 MNIST MLP).
source "$(dirname "$0")/_paper.sh"
paper_table mnist mlp "MLP on MNIST (paper 1)" "$@"
