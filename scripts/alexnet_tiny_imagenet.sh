#!/usr/bin/env bash
# Paper 1: AlexNet-Tiny-ImageNet (needs the tiny-imagenet-200/ folder; a GPU).
source "$(dirname "$0")/_paper.sh"
paper_table tiny_imagenet alexnet_tiny_imagenet "AlexNet on Tiny ImageNet (paper 1)" "$@"
