// Private to hutch-image: libarchive's last error, which it may not have.
#pragma once

#include <archive.h>

#include <string>

namespace hutch::image::detail {

// archive_error_string, or `otherwise` when libarchive has none (it returns NULL then).
inline std::string archive_message(struct archive* a, const char* otherwise = "no detail from libarchive") {
    const char* m = archive_error_string(a);
    return m ? m : otherwise;
}

}  // namespace hutch::image::detail
