#!/usr/bin/perl
# The POE reference: the line echo server from the
# POE::Component::Server::TCP synopsis, on 127.0.0.1 and a port the OS picks.
# Prints "PORT <n>" once listening (the benchmark runner reads it).
use strict;
use warnings;
use POE qw(Component::Server::TCP);
use Socket qw(sockaddr_in);

$| = 1;

POE::Component::Server::TCP->new(
    Address     => "127.0.0.1",
    Port        => 0,
    ListenQueue => 4096,
    Started     => sub {
        my ($port) = sockaddr_in($_[HEAP]{listener}->getsockname);
        print "PORT $port\n";
    },
    ClientInput => sub { $_[HEAP]{client}->put($_[ARG0]) },
    ClientError => sub { },
);

POE::Kernel->run();
exit 0;
