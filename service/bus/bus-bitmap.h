/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Manager's bitmap methods (AddBitmap, RemoveBitmap, ClearBitmap, EnableBitmap,
 * DisableBitmap, MergeBitmaps, ListBitmaps): QEMU's block-dirty-bitmap-* on a qcow2 image, offline.
 * This layer reads the call, checks what needs no I/O, asks polkit (org.blockjobd.bitmap.modify,
 * for every method that changes an image; root is never asked), and replies; the job factory's
 * bitmap operations (bitmap-ops.h) open the image with the caller's rights and do the work on a
 * worker. */

#include <systemd/sd-bus.h>

/* What every call that changes an image's bitmaps is authorized for: these methods, and a Backup
 * that writes its source's bitmap (bus-manager.c). */
#define BITMAP_MODIFY_ACTION "org.blockjobd.bitmap.modify"

int bus_method_add_bitmap(sd_bus_message *message, void *userdata, sd_bus_error *error);
int bus_method_remove_bitmap(sd_bus_message *message, void *userdata, sd_bus_error *error);
int bus_method_clear_bitmap(sd_bus_message *message, void *userdata, sd_bus_error *error);
int bus_method_enable_bitmap(sd_bus_message *message, void *userdata, sd_bus_error *error);
int bus_method_disable_bitmap(sd_bus_message *message, void *userdata, sd_bus_error *error);
int bus_method_merge_bitmaps(sd_bus_message *message, void *userdata, sd_bus_error *error);
int bus_method_list_bitmaps(sd_bus_message *message, void *userdata, sd_bus_error *error);
