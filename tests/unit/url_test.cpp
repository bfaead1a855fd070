// jobq::mask_url, the one reading of where a URL or connection string holds its password
// (the tools, the Redis and the PostgreSQL backends all mask with it).

#include <string>

#include <catch2/catch.hpp>

#include <jobq/url.hpp>

using jobq::mask_url;

TEST_CASE("mask_url hides the password of user:password@", "[url]") {
  CHECK(mask_url("postgresql://app:secret@db:5432/app") == "postgresql://app:***@db:5432/app");
  CHECK(mask_url("postgres://app:secret@db/app?sslmode=require") == "postgres://app:***@db/app?sslmode=require");
  CHECK(mask_url("redis://:secret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0");
  CHECK(mask_url("rediss://bob:secret@[::1]:6380/2") == "rediss://bob:***@[::1]:6380/2");
  CHECK(mask_url("mongodb://admin:hunter2@db:27017/jobs") == "mongodb://admin:***@db:27017/jobs");
  CHECK(mask_url("postgresql://app:@db/app") == "postgresql://app:***@db/app");
  CHECK(mask_url("sqlite:relative:secret@x") == "sqlite:***@x");  // no "//": all up to the '@'
  CHECK(mask_url("host=h dbname=post:secret@h/x") == "host=h dbname=post:***@h/x");
  // Something before the scheme (a pasted space, a variable name) does not hide the URL.
  CHECK(mask_url(" redis://u:secret@h/0") == " redis:***@h/0");
  CHECK(mask_url(std::string("r\0edis://u:secret@h/0", 21)) == std::string("r\0edis:***@h/0", 14));
  CHECK(mask_url("JOBQ_URL=redis://u:secret@h/0") == "JOBQ_URL=redis://u:***@h/0");
  CHECK(mask_url("url: redis://u:secret@h/0?password=x") == "url:***@h/0?password=***");  // "url:" as scheme
  CHECK(mask_url("x= :secret@://") == "x= :***@://");
  // What a password may hold unencoded or wrongly encoded: the password runs to the last '@'.
  for (const std::string pw : {"S3CRET/pw", "S3@CRET", "S3:CRET", "S3[CRET", "S3]C[RET", "S3?CRET", "S3#CRET",
                               "S3CRET%zz", "S3CRET%00", "S3%41CRET", "S3CRET%", "S3 CRET", "a/b@c:d?e#f"}) {
    CAPTURE(pw);
    CHECK(mask_url("postgresql://u:" + pw + "@[::1/db") == "postgresql://u:***@[::1/db");
    CHECK(mask_url("postgresql://u:" + pw + "@[]:5432") == "postgresql://u:***@[]:5432");
    CHECK(mask_url("postgresql://u:" + pw + "@[::1]x") == "postgresql://u:***@[::1]x");
    CHECK(mask_url("redis://u:" + pw + "@127.0.0.1:6379/0") == "redis://u:***@127.0.0.1:6379/0");
    CHECK(mask_url("rediss://:" + pw + "@h") == "rediss://:***@h");
  }
  // No password: the user name and everything else stay.
  CHECK(mask_url("postgresql://app@db/app") == "postgresql://app@db/app");
  CHECK(mask_url("sqlite:///var/lib/a@b/jobs.db") == "sqlite:///var/lib/a@b/jobs.db");
  CHECK(mask_url("memory://") == "memory://");
  CHECK(mask_url("not a url") == "not a url");
  // An '@' after the host makes everything before it the password (hides more, never less).
  CHECK(mask_url("postgresql://h:5432/db?application_name=a@b") == "postgresql://h:***@b");
}

TEST_CASE("mask_url hides password= in every URL form", "[url]") {
  // URL query parameters: first, middle, last, %-encoded name, sslpassword, a value holding
  // '&' (libpq splits it; the rest is most likely password too), an '@' in the query.
  CHECK(mask_url("postgresql://db/app?password=secret") == "postgresql://db/app?password=***");
  CHECK(mask_url("postgresql://db/app?user=a&password=secret&sslmode=require") ==
        "postgresql://db/app?user=a&password=***&sslmode=require");
  CHECK(mask_url("postgresql://db/app?user=a&password=secret") == "postgresql://db/app?user=a&password=***");
  CHECK(mask_url("postgresql://db/app?pass%77ord=secret&x=1") == "postgresql://db/app?pass%77ord=***&x=1");
  CHECK(mask_url("postgresql://db/app?PASSWORD=secret") == "postgresql://db/app?PASSWORD=***");
  CHECK(mask_url("postgresql://db/app?sslpassword=secret&sslmode=require") ==
        "postgresql://db/app?sslpassword=***&sslmode=require");
  CHECK(mask_url("postgresql://db/app?password=sec&ret&sslmode=require") ==
        "postgresql://db/app?password=***&sslmode=require");
  CHECK(mask_url("postgresql://db/app?password=s=e%zz") == "postgresql://db/app?password=***");
  CHECK(mask_url("postgresql://u:pw@db/app?password=secret") == "postgresql://u:***@db/app?password=***");
  CHECK(mask_url("postgresql://db:1/app?user=me@corp&password=secret") == "postgresql://db:***@corp&password=***");
  CHECK(mask_url("redis://h:6379/0?password=secret") == "redis://h:6379/0?password=***");
  CHECK(mask_url("rediss://h/0?password=secret") == "rediss://h/0?password=***");
  // Before the query no parameter is valid, but a server may echo it as a database name.
  CHECK(mask_url("postgresql://u:pw@db/app password=secret") == "postgresql://u:***@db/app password=***");
  // libpq keyword/value strings: unquoted, quoted (spaces, escaped quote), spaces around '=',
  // a word without '=' after the value, an unterminated quote, a URL as a value.
  CHECK(mask_url("host=db password=secret dbname=app") == "host=db password=*** dbname=app");
  CHECK(mask_url("password=secret") == "password=***");
  CHECK(mask_url("host=db password='quoted secret' dbname=app") == "host=db password=*** dbname=app");
  CHECK(mask_url(R"(host=db password='it\'s secret' dbname=app)") == "host=db password=*** dbname=app");
  CHECK(mask_url("host=db password = secret  dbname=app") == "host=db password = ***  dbname=app");
  CHECK(mask_url("host=db password=sec ret dbname = app") == "host=db password=*** dbname = app");
  CHECK(mask_url("host=db password='unterminated secret") == "host=db password=***");
  CHECK(mask_url("host=db sslpassword=secret") == "host=db sslpassword=***");
  CHECK(mask_url("host=db dbname=postgresql://u:secret@h/x") == "host=db dbname=postgresql://u:***@h/x");
  CHECK(mask_url("host=db dbname='postgresql://u:sec ret@h/x?password=pw' user=u") ==
        "host=db dbname='postgresql://u:***@h/x?password=***' user=u");
  CHECK(mask_url("host=db user=app") == "host=db user=app");
}

TEST_CASE("scrub removes every form of the password from a foreign message", "[url]") {
  const std::string url = "postgresql://u:p%41ss@h/db?sslpassword=other";
  CHECK(jobq::detail::url::scrub("bad: \"" + url + "\"", url) == "bad: \"postgresql://u:***@h/db?sslpassword=***\"");
  CHECK(jobq::detail::url::scrub("saw p%41ss and pAss and other", url) == "saw *** and *** and ***");
  CHECK(jobq::detail::url::scrub("no secret here", "host=h password='a b\\'c'") == "no secret here");
  CHECK(jobq::detail::url::scrub("db \"a b'c\" missing", "host=h password='a b\\'c'") == "db \"***\" missing");
  CHECK(jobq::detail::url::scrub("auth \"pw\" failed", "password=pw\\") == "auth \"***\" failed");  // libpq drops a last '\\'
}
