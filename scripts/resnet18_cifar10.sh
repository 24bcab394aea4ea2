#!/usr/bin/env bash
# Paper 1: ResNet-18-CIFAR-10 (needs cifar-10-batches-py/; a GPU).
source "$(dirname "$0")/_paper.sh"
paper_table cifar10 resnet18 "ResNet-18 on CIFAR-10 (paper 1)" "$@"
