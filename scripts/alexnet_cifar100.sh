#!/usr/bin/env bash
# Paper 1: AlexNet-CIFAR-100 (needs cifar-100-python/; a GPU).
source "$(dirname "$0")/_paper.sh"
paper_table cifar100 alexnet_cifar100 "AlexNet on CIFAR-100 (paper 1)" "$@"
