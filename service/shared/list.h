/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Intrusive doubly-linked lists: an object carries "LIST_FIELDS(Type, name)" and the list head is a
 * plain "Type *head". Several lists may thread through one object under different names. */

#include <assert.h>

#define LIST_FIELDS(t, name) t *name##_next, *name##_prev

#define LIST_PREPEND(name, head, item)                                  \
        do {                                                            \
                typeof(*(head)) **_head = &(head), *_item = (item);     \
                assert(_item);                                          \
                if ((_item->name##_next = *_head))                      \
                        _item->name##_next->name##_prev = _item;        \
                _item->name##_prev = NULL;                              \
                *_head = _item;                                         \
        } while (0)

#define LIST_APPEND(name, head, item)                                   \
        do {                                                            \
                typeof(*(head)) **_head = &(head), *_item = (item), *_t; \
                assert(_item);                                          \
                _item->name##_next = NULL;                              \
                if (!*_head) {                                          \
                        _item->name##_prev = NULL;                      \
                        *_head = _item;                                 \
                } else {                                                \
                        for (_t = *_head; _t->name##_next; _t = _t->name##_next) \
                                ;                                       \
                        _t->name##_next = _item;                        \
                        _item->name##_prev = _t;                        \
                }                                                       \
        } while (0)

#define LIST_REMOVE(name, head, item)                                   \
        do {                                                            \
                typeof(*(head)) **_head = &(head), *_item = (item);     \
                assert(_item);                                          \
                if (_item->name##_next)                                 \
                        _item->name##_next->name##_prev = _item->name##_prev; \
                if (_item->name##_prev)                                 \
                        _item->name##_prev->name##_next = _item->name##_next; \
                else {                                                  \
                        assert(*_head == _item);                        \
                        *_head = _item->name##_next;                    \
                }                                                       \
                _item->name##_next = _item->name##_prev = NULL;         \
        } while (0)

#define LIST_FOREACH(name, i, head) for ((i) = (head); (i); (i) = (i)->name##_next)
