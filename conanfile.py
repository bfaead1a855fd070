"""Conan 2 recipe of jobq, a header-only C++20 background-job library.

One component per part, with the CMake names of jobq's own config package:
  core (jobq::core), memory (jobq::memory): always
  sqlite (jobq::sqlite), postgres (jobq::postgres), redis (jobq::redis), http (jobq::http):
  each with its option with_<name> and its client library.
Consumers: `find_package(jobq CONFIG REQUIRED)` with CMakeDeps, then link e.g. jobq::sqlite.
"""

import os

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class JobqConan(ConanFile):
    name = "jobq"
    version = "0.1.0"
    description = "Header-only C++20 background jobs: queues, workers, retries, on memory, SQLite, PostgreSQL or Redis"
    license = "MIT"
    topics = ("job-queue", "background-jobs", "worker", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "with_sqlite": [True, False],
        "with_postgres": [True, False],
        "with_redis": [True, False],
        "with_http": [True, False],
    }
    default_options = {
        "with_sqlite": True,
        "with_postgres": False,
        "with_redis": False,
        "with_http": False,
        # The system IANA database (/usr/share/zoneinfo), as the CMake build uses; no download.
        "date/*:use_system_tz_db": True,
    }
    exports_sources = (
        "include/*",
        "backends/*/include/*",
        "http/include/*",
        "LICENSE",
    )
    no_copy_source = True

    # part name -> (option, header folder in the sources, Conan requirement, its CMake target)
    _parts = {
        "sqlite": ("with_sqlite", "backends/sqlite/include", "sqlite3/[>=3.35 <4]", "sqlite3::sqlite3"),
        "postgres": ("with_postgres", "backends/postgres/include", "libpq/[>=13]", "libpq::libpq"),
        "redis": ("with_redis", "backends/redis/include", "hiredis/[>=1.0 <2]", "hiredis::hiredis"),
        "http": ("with_http", "http/include", "cpp-httplib/[>=0.11 <1]", "cpp-httplib::cpp-httplib"),
    }

    def _enabled(self):
        return [part for part, (option, _, _, _) in self._parts.items() if self.options.get_safe(option)]

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        # Headers include these, so they are visible to consumers (transitive_headers).
        self.requires("nlohmann_json/[>=3.10 <4]", transitive_headers=True)
        self.requires("date/[>=3.0.1 <4]", transitive_headers=True)  # cron time zones (date-tz)
        for part in self._enabled():
            self.requires(self._parts[part][2], transitive_headers=True)

    def package_id(self):
        # Header-only: the options (which headers and requirements) are the only difference.
        self.info.settings.clear()

    def validate(self):
        if self.settings.get_safe("compiler.cppstd"):
            check_min_cppstd(self, 20)

    def build(self):
        pass

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        include = os.path.join(self.package_folder, "include")
        copy(self, "*.hpp", os.path.join(self.source_folder, "include"), include)
        copy(self, "*.hpp", os.path.join(self.source_folder, "backends", "memory", "include"), include)
        for part in self._enabled():
            copy(self, "*.hpp", os.path.join(self.source_folder, self._parts[part][1]), include)

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "jobq")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []

        def component(name, requires):
            c = self.cpp_info.components[name]
            c.set_property("cmake_target_name", "jobq::" + name)
            c.bindirs = []
            c.libdirs = []
            c.requires = requires
            return c

        core = component("core", ["nlohmann_json::nlohmann_json", "date::date-tz"])
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread"]
        component("memory", ["core"])
        for part in self._enabled():
            component(part, ["core", self._parts[part][3]])
