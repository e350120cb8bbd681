// Small filesystem helpers that say which path failed.
#pragma once

#include <string>
#include <sys/types.h>

namespace hutch::fs {

std::string read_file(const std::string& path);
// The rest of an open file; `shown_path` names it in errors.
std::string read_fd(int fd, const std::string& shown_path);
// Writes via a temporary file in the same directory and rename(2), so readers see old or new.
void write_file_atomic(const std::string& path, const std::string& data, mode_t mode = 0600);
// mkdir -p; existing directories are fine. Returns true if the last component was created.
bool make_dirs(const std::string& path, mode_t mode = 0700);
bool exists(const std::string& path);
// Marks a directory as the top of directory hierarchies (chattr +T): ext4 then spreads its
// subdirectories over the block groups instead of packing them into the directory's own.
// Best effort: filesystems without the flag are left as they are.
void mark_top_of_hierarchies(const std::string& path);
// Collapses ".", ".." and repeated slashes of an absolute path without touching the disk.
std::string lexical_normal(const std::string& path);
// `path` joined to the working directory when it is relative (symbolic links stay as given).
std::string absolute(const std::string& path);
// Throws unless every directory on the way to `path` (itself too, unless `itself` is false) is
// searchable by others: root's sandboxes run as an unprivileged uid range that looks their
// layers up by path.
void require_searchable(const std::string& path, const std::string& what, bool itself = true);
// Removes a tree without following symlinks (walks with dirfds, never by re-resolving paths).
// Missing is fine.
void remove_tree(const std::string& path);
// Removes everything inside the directory open at dirfd (not the directory itself).
void remove_contents(int dirfd, const std::string& shown_path);

}  // namespace hutch::fs
